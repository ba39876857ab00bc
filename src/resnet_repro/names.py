"""Where MLflow models logged before the move into subpackages (2026-12-07) find ModelSpec: their
pickles name resnet_repro.names.ModelSpec (ResNet.spec), and a process that has already imported this
package does not load the logged code's copy. For them only: the code imports resnet_repro.paper.names
(as models.py stays where it is, for the same pickles)."""

from resnet_repro.paper.names import ModelSpec, parse_model_name  # noqa: F401

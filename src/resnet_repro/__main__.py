import sys

from resnet_repro.cli import main

sys.exit(main())

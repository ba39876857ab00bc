#!/usr/bin/env bash
# An MLflow tracking server with MLflow's own authentication (`make mlflow-server`; docs/tracking.md):
# every request needs a user name and password (HTTP basic auth); trainings log to it live.
#
#   credentials  MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, else ~/.mlflow/credentials: the
#                places the MLflow client reads them from, so the jobs that log authenticate with
#                them too. On the first start (an empty user store) they create the server's admin
#                account; after that they only have to match it (a changed password is refused here:
#                change it with the auth API, docs/tracking.md). None set: an error, and nothing starts.
#   MLFLOW_HOST  the interface to listen on: 127.0.0.1 (this host only) unless set; MLFLOW_HOST=0.0.0.0
#                for the compute nodes of a cluster
#   MLFLOW_PORT, MLFLOW_WORKERS   5000 and 4 unless set
#   MLFLOW_SERVER_DIR  the server's directory (default: mlflow-server/ in the repository), on this
#                host's local disk: the run store (mlflow.db, artifacts/), the user store
#                (basic_auth.db), basic_auth.ini (written on first start, kept: its default_permission
#                is what accounts the admin creates may do in experiments they did not create, READ)
#                and secret_key (the key of the UI's forms, the same for every worker and restart).
#                Made private to this user (0700, files 0600).
# The password is never written by this script, nor put on a command line.
set -euo pipefail
umask 077

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${MLFLOW_SERVER_DIR:-$repo/mlflow-server}
host=${MLFLOW_HOST:-127.0.0.1}
port=${MLFLOW_PORT:-5000}
workers=${MLFLOW_WORKERS:-4}
py=python # the venv's (the Makefile puts it first on PATH)

die() {
	echo "mlflow-server: $*" >&2
	exit 1
}
command -v "$py" >/dev/null || die "no python on PATH: run it as \`make mlflow-server\` (or with .venv/bin on PATH)"

# The credentials, read as the client reads them (env first, then ~/.mlflow/credentials), and checked
# before anything is created: one line and exit 1 when they are missing or MLflow would refuse them.
# Printed on this pipe only (user, then password), never as arguments.
creds=$(
	MLFLOW_SERVER_DIR=$dir "$py" - <<'EOF'
import os, sys, warnings
from pathlib import Path

warnings.simplefilter("ignore")  # mlflow's deprecation warnings: the errors below are one line each

def die(msg):
    print(f"mlflow-server: {msg}", file=sys.stderr)
    sys.exit(1)

try:
    from mlflow.utils.credentials import read_mlflow_creds
except ImportError:
    die("mlflow is not installed in this Python: run it as `make mlflow-server`")
try:
    import flask_wtf  # noqa: F401 (the basic-auth app needs it: the mlflow[auth] extra)
except ImportError:
    die("Flask-WTF is missing (mlflow's auth extra): `make venv`, or `pip install 'mlflow[auth]'`")
user, password = read_mlflow_creds()
if not user or not password:
    die("no credentials: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or write them to "
        "~/.mlflow/credentials (docs/tracking.md: the tracking server); they are the server's admin account")
if len(password) < 12 or "\n" in password or "\n" in user:
    die("the password must be at least 12 characters, on one line (MLflow's rule)")
db = Path(os.environ["MLFLOW_SERVER_DIR"]) / "basic_auth.db"
if db.is_file():  # the admin account exists: the password must be its own (else every job gets 401)
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(f"sqlite:///{db}")
    if store.has_user(user) and not store.authenticate_user(user, password):
        die(f"user {user!r} of {db} has another password: set the current one "
            "(to change it: MLflow's auth API, docs/tracking.md)")
print(user)
print(password)
EOF
) || exit 1
admin=${creds%%$'\n'*}
export MLFLOW_AUTH_ADMIN_USERNAME=$admin
export MLFLOW_AUTH_ADMIN_PASSWORD=${creds#*$'\n'}
unset creds

mkdir -p "$dir"
chmod 700 "$dir"
dir=$(cd "$dir" && pwd)
ini=$dir/basic_auth.ini
if [[ ! -f $ini ]]; then
	cat >"$ini" <<'EOF'
# MLflow's basic-auth settings for this server (written by scripts/mlflow-server.sh on its first
# start, then kept: edit it here). The admin's name and password are not here: the script passes
# them on from MLFLOW_TRACKING_USERNAME/PASSWORD or ~/.mlflow/credentials, and they only create the
# admin account on the first start.
[mlflow]
# what a user may do in an experiment nobody gave them a permission on: READ, EDIT, MANAGE or
# NO_PERMISSIONS (whoever creates an experiment may MANAGE it; the admin may do everything)
default_permission = READ
# the user store, relative to this directory (the server runs in it)
database_uri = sqlite:///basic_auth.db
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
EOF
fi
if [[ ! -s $dir/secret_key ]]; then
	"$py" -c 'import secrets; print(secrets.token_hex(32))' >"$dir/secret_key"
fi
chmod 600 "$ini" "$dir/secret_key"
MLFLOW_FLASK_SERVER_SECRET_KEY=$(<"$dir/secret_key")
export MLFLOW_FLASK_SERVER_SECRET_KEY
export MLFLOW_AUTH_CONFIG_PATH=$ini
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false

echo "mlflow-server: http://$host:$port (admin: $admin), store $dir" >&2
cd "$dir"
exec "$py" -m mlflow server --app-name basic-auth \
	--backend-store-uri "sqlite:///$dir/mlflow.db" --artifacts-destination "$dir/artifacts" \
	--host "$host" --port "$port" --workers "$workers"

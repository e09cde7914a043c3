# modelctl as a service (`modelctl serve`): the image the Compose deployment runs.
#
# Built from wheels made on the host, so the build itself never reaches a package index:
#     bash scripts/build-image.sh               # wheels + image modelctl:local FROM python:3.11-slim
#     bash scripts/build-image.sh --local-base  # FROM a Debian root made here with debootstrap (CI)
# The context is the repository, of which .dockerignore sends only build/wheels/.
#
# BASE: any image with Python 3.11 at `python3` and glibc (the wheels are built for the base's
# Python and C library). Only the legacy builder's features are used (no BuildKit needed).
ARG BASE=python:3.11-slim

FROM ${BASE} AS install
# `wheel[s]` makes the COPY succeed when the directory is missing, so that the RUN below can say why.
COPY .dockerignore build/wheel[s] /wheels/
# pip is not needed in the image: it runs from its own wheel (a wheel is a zip Python can execute)
# and installs modelctl and its dependencies into a venv, which the final stage copies.
RUN set -e; \
    if ! ls /wheels/modelctl-*.whl /wheels/pip-*.whl >/dev/null 2>&1; then \
        echo "no wheels in build/wheels: run scripts/build-image.sh, which builds them on the host" >&2; exit 1; \
    fi; \
    python3 -m venv --without-pip /opt/modelctl; \
    pip_wheel=$(ls /wheels/pip-*.whl | head -n 1); \
    /opt/modelctl/bin/python3 "$pip_wheel/pip" install --quiet --no-index --find-links /wheels \
        --no-cache-dir --disable-pip-version-check /wheels/modelctl-*.whl; \
    /opt/modelctl/bin/modelctl --help >/dev/null

FROM ${BASE}
COPY --from=install /opt/modelctl /opt/modelctl
ENV PATH=/opt/modelctl/bin:$PATH \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MODELCTL_LISTEN=127.0.0.1:8080 \
    MODELCTL_PROFILES_DIR=/profiles
# 200 from /health while the service runs (no token needed), at the address it listens on.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as r; h, _, p = os.environ.get('MODELCTL_LISTEN', '127.0.0.1:8080').rpartition(':'); h = '127.0.0.1' if h in ('', '0.0.0.0') else h; r.urlopen(f'http://{h}:{p}/health', timeout=3)"]
STOPSIGNAL SIGTERM
CMD ["modelctl", "serve"]

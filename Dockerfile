# telemetry-bridge: one image for every role; the command picks it.
#   docker build -t telemetry-bridge .
#   docker run ... telemetry-bridge                 # serve: the WebSocket/HTTP front (default)
#   docker run ... telemetry-bridge ingest --shared
#   docker run ... telemetry-bridge scheduler
#   docker run ... telemetry-bridge migrate
# Configuration is the BRIDGE_* environment (README "Configuration"); deploy/compose.yaml
# wires a whole deployment. Without BRIDGE_DATABASE_URL / BRIDGE_MQTT_URL only `up` would
# start embedded services, which is not what a container is for: set both.

# ---- build: install the package and its dependencies into a virtualenv -----------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/telemetry-bridge/.venv
WORKDIR /src
# Only what `pip install .` needs (pyproject.toml names README.md as the readme); tests,
# benchmarks and docs stay out of the image. No [test] extra.
COPY pyproject.toml README.md ./
COPY bridge ./bridge
COPY ingest ./ingest
COPY storage ./storage
RUN /opt/telemetry-bridge/.venv/bin/pip install . \
 && /opt/telemetry-bridge/.venv/bin/pip uninstall -y pip

# ---- runtime ------------------------------------------------------------------------------
FROM python:3.11-slim
RUN groupadd --system --gid 10001 telemetry-bridge \
 && useradd --system --uid 10001 --gid telemetry-bridge \
        --home-dir /var/lib/telemetry-bridge --create-home --shell /usr/sbin/nologin \
        telemetry-bridge
COPY --from=build /opt/telemetry-bridge/.venv /opt/telemetry-bridge/.venv
COPY deploy/docker/healthcheck.py /opt/telemetry-bridge/healthcheck.py

# BRIDGE_WS_HOST: in a container the front must listen on the container's interface, not its
# loopback (the front's default); publishing or proxying the port decides who reaches it.
ENV PATH=/opt/telemetry-bridge/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BRIDGE_STATE_DIR=/var/lib/telemetry-bridge \
    BRIDGE_WS_HOST=0.0.0.0 \
    BRIDGE_WS_PORT=8765

USER telemetry-bridge
WORKDIR /var/lib/telemetry-bridge
EXPOSE 8765

# Only `serve` answers HTTP; for ingest, scheduler and migrate the script passes (see it).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "/opt/telemetry-bridge/healthcheck.py"]

# Exec form: the bridge is PID 1 and gets SIGTERM itself (the front closes clients with
# 1001, the ingest commits and acknowledges its batch). `serve --processes N` starts child
# processes: run such a container with --init (compose: init: true) so an init reaps them.
STOPSIGNAL SIGTERM
ENTRYPOINT ["telemetry-bridge"]
CMD ["serve"]

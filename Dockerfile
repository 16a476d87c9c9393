# One image for every claw process: `claw coordinator start`, `claw worker start`, `claw gateway start`,
# `claw nats start`.
FROM python:3.11-slim

RUN useradd --create-home --uid 10001 claw
WORKDIR /app
COPY setup.py README.md ./
COPY common/ common/
COPY communication/ communication/
COPY storage/ storage/
COPY coordinator/ coordinator/
COPY worker/ worker/
COPY cli/ cli/
COPY gateway/ gateway/
COPY config/ config/
# [otel]: the OTLP exporter, so OTEL_TRACES_EXPORTER=otlp works in the containers.
RUN pip install --no-cache-dir ".[otel]" && mkdir -p /var/lib/claw && chown claw /var/lib/claw

USER claw
ENV PYTHONUNBUFFERED=1 CLAW_LOG_FORMAT=json CLAW_NATS_CONNECT_RETRY_S=60
ENTRYPOINT ["claw"]
CMD ["--help"]

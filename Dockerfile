# Hallwatch service image. Build: docker compose build (see docker-compose.yml).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    HALLWATCH_DASHBOARD=/app/dashboard
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY vms ./vms
COPY dashboard ./dashboard
# /srv/hallwatch: where several instances mount their shared recordings (README,
# "Several instances"); a new volume mounted there takes its owner from the image.
RUN pip install . && useradd --system --home /var/lib/hallwatch hallwatch \
    && mkdir -p /var/lib/hallwatch /srv/hallwatch && chown hallwatch /var/lib/hallwatch /srv/hallwatch
USER hallwatch
# Relative paths of the configuration (server.data_dir: data) land in the volume.
WORKDIR /var/lib/hallwatch
VOLUME ["/var/lib/hallwatch"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["hallwatch", "serve", "--host", "0.0.0.0"]

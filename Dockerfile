# The alertbridge image, built from the project's pyproject.toml.
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bridge ./bridge
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /data alertbridge \
    && mkdir -p /data && chown alertbridge /data
USER alertbridge
EXPOSE 9470
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9470/-/ready', timeout=2)"
ENTRYPOINT ["alertbridge"]
CMD ["serve", "--host", "0.0.0.0", "--port", "9470", "--db", "/data/alertbridge.db"]

# The sidecar (SPEC 1, 5): a slim image that runs `python -m sidecar` as an
# unprivileged user. The database logic ships separately (`supabase db push`).
# Build: docker build -t tally-sidecar .   Deploy: fly deploy (fly.toml)

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the packages need: no tests, scripts or migrations in the image.
COPY pyproject.toml README.md ./
COPY sidecar ./sidecar
# The `tally` command too, for operator jobs run on a machine (`tally ops replay`).
COPY tally ./tally
RUN python -m venv /opt/venv && /opt/venv/bin/pip install .

FROM python:3.11-slim
RUN groupadd --system --gid 10001 tally \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin tally
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ENV=production \
    PORT=8080
WORKDIR /app
USER 10001:10001
EXPOSE 8080
# /healthz: the process is up (Fly's checks also probe /readyz, the database).
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8080') + '/healthz', timeout=2)"]
# The sidecar finishes in-flight webhooks on SIGTERM, then exits.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "sidecar"]

# The bridge as a container: `bridge serve` on port 8080, as a non-root user.
#
#   docker build -t phone-bridge:0.1.0 .
#   docker run --rm -p 8080:8080 phone-bridge:0.1.0          # local agent, no keys needed
#
# No secret is baked in: TWILIO_AUTH_TOKEN, OPENAI_API_KEY, STREAM_TOKEN_SECRET, DATABASE_URL,
# REDIS_URL, ... come from the environment at run time (docker-compose.yml, deploy/kubernetes).
# Stage 1 fetches the softphone's Socket.IO client from the npm registry; stage 2 builds
# the package into a virtualenv; the final stage holds that virtualenv and one JS file.

# --- the softphone page's Socket.IO client (served from node_modules, never a CDN) -------
FROM node:22-slim AS js
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --loglevel=error

# --- the package and its runtime dependencies (no test extras) ----------------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Every runtime dependency ships manylinux wheels for CPython 3.11 (numpy, soxr, uvloop,
# asyncpg): no compiler in this stage. README.md is the package's long description.
COPY pyproject.toml README.md ./
COPY bridge ./bridge
COPY twiml ./twiml
RUN pip install --upgrade pip && pip install . && pip check

# --- runtime --------------------------------------------------------------------------------
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8080 \
    LOG_FORMAT=json \
    RECORDS_PATH=/var/lib/bridge/records.db \
    RECORDINGS_DIR=/var/lib/bridge/recordings
# A fixed numeric uid: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN groupadd --system --gid 10001 bridge \
    && useradd --system --uid 10001 --gid bridge --home-dir /app --shell /usr/sbin/nologin bridge \
    && mkdir -p /app /var/lib/bridge/recordings \
    && chown -R 10001:10001 /var/lib/bridge
COPY --from=build /opt/venv /opt/venv
COPY --from=js /src/node_modules/socket.io-client/dist/socket.io.min.js \
    /app/node_modules/socket.io-client/dist/socket.io.min.js
# The softphone looks for node_modules in the working directory.
WORKDIR /app
# Call records (SQLite) and recordings when no DATABASE_URL is given; mount a volume there.
VOLUME ["/var/lib/bridge"]
USER 10001:10001
EXPOSE 8080
# /healthz turns 503 while draining: the container shows "unhealthy" during a drain, which
# is true (it takes no new calls) and harmless (Docker does not restart unhealthy containers).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8080'), timeout=2)"]
# uvicorn handles SIGTERM as PID 1: stop taking calls, let live ones finish for up to
# SHUTDOWN_DRAIN_S (give `docker stop -t` / stop_grace_period / terminationGracePeriodSeconds
# more than that).
STOPSIGNAL SIGTERM
CMD ["bridge", "serve"]

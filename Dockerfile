# One image, three roles (web, worker, scheduler): pick with the command.
#   docker run IMAGE                                  -> web (frontend + backend, port 3000)
#   docker run IMAGE python -m jobs.worker build send default   -> RQ worker
#   docker run IMAGE python -m jobs.worker placement --simple   -> seed checks
#   docker run IMAGE python -m jobs.scheduler         -> rq-scheduler
# Required: DATABASE_URL (PostgreSQL), REDIS_URL, MASTER_KEY, PUBLIC_URL.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MAILER_ENV=prod \
    REFLEX_TELEMETRY_ENABLED=false \
    REFLEX_CHECK_LATEST_VERSION=false \
    REFLEX_USE_SYSTEM_BUN=1

RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm unzip curl \
 && npm install -g bun@1.4.5 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY . .
# Build the frontend once at image build time; the container then serves it.
RUN reflex export --frontend-only --no-zip

RUN useradd --system --home /app mailer && chown -R mailer /app
USER mailer
EXPOSE 3000
HEALTHCHECK CMD curl -fsS http://127.0.0.1:3000/health || exit 1
CMD ["sh", "-c", "python -m mailer_app migrate && reflex run --env prod --backend-host 0.0.0.0"]

# Web tier (gunicorn) and CPU workers. Not built in CI here: no Docker engine runs on CI machines.
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml constraints.txt ./
COPY config config
COPY governance governance
COPY reenactment reenactment
COPY templates templates
COPY manage.py ./
COPY platform/bin platform/bin
RUN pip install -c constraints.txt . && useradd --system --uid 1000 app
RUN DJANGO_SETTINGS_MODULE=config.settings.base SECRET_KEY=build-only \
    python manage.py collectstatic --noinput
USER app
EXPOSE 8000
CMD ["platform/bin/start-web.sh"]

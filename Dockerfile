# The Keel image: one image for every role. The default command serves the API;
# `keel worker` and `keel migrate` run the other roles (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KEEL_API_HOST=0.0.0.0 \
    KEEL_DATA_DIR=/app/data

RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home keel

WORKDIR /app
COPY pyproject.toml README.md ./
COPY api ./api
COPY activities ./activities
COPY infra ./infra
COPY worker ./worker
COPY workflows ./workflows
RUN pip install . \
    && mkdir -p /app/data \
    && chown keel:keel /app/data

USER keel
EXPOSE 8000
CMD ["keel", "api"]

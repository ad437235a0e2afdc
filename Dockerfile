# The Keel image: one image for every role. The default command serves the API;
# `keel worker` and `keel migrate` run the other roles (see docker-compose.yml).
# Dependencies come from uv.lock, installed in a layer of their own before the code
# is copied, so a change to the code rebuilds only the last layers.
FROM python:3.11-slim

# The uv release the Makefile uses too (UV_VERSION there); it comes from PyPI.
ARG UV_VERSION=0.13.9

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_NO_CACHE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/opt/keel \
    PATH=/opt/keel/bin:$PATH \
    KEEL_API_HOST=0.0.0.0 \
    KEEL_DATA_DIR=/app/data

RUN pip install uv==${UV_VERSION} \
    && useradd --system --uid 10001 --user-group --home-dir /app --no-create-home keel

WORKDIR /app

# 1. The dependencies, exactly as locked (no extras: no test or bench tools).
COPY pyproject.toml uv.lock ./
RUN uv sync --locked --no-install-project

# 2. Keel itself, installed as a regular (not editable) package.
COPY README.md ./
COPY keel ./keel
COPY api ./api
COPY activities ./activities
COPY infra ./infra
COPY worker ./worker
COPY workflows ./workflows
RUN uv sync --locked --no-editable \
    && mkdir -p /app/data \
    && chown keel:keel /app/data

USER keel
EXPOSE 8000
CMD ["keel", "api"]

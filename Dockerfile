# One image for every gateway process; docker-compose.yml picks the command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
COPY api ./api
COPY cli ./cli
COPY execution ./execution
COPY worker ./worker
COPY scheduler ./scheduler
COPY shared ./shared
COPY ops ./ops
RUN pip install . && useradd --create-home gateway
USER gateway
EXPOSE 8000
CMD ["gateway", "api", "--host", "0.0.0.0"]

# One image for every paysaga process: `paysaga api | worker | sandbox`.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY core core
COPY paysaga paysaga
COPY workflows workflows
COPY activities activities
COPY api api
COPY gateways gateways
COPY sandbox sandbox
COPY store store
COPY worker.py ./
RUN pip install --no-cache-dir .
RUN useradd --create-home paysaga
USER paysaga
ENTRYPOINT ["paysaga"]

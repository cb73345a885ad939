# Placeholder: the GPU image (vLLM OpenAI base, non-root, HEALTHCHECK) arrives with the deployment issue.
FROM python:3.11-slim
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir .
ENTRYPOINT ["grm-server"]
CMD ["serve", "--host", "0.0.0.0"]

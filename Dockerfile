# One image for the operator, the standalone server, the task runner and the workers.
FROM python:3.11-slim

# bubblewrap seals each task of `gaia serve` and `gaia worker` (docs/security.md). A
# container that may not create namespaces runs no task until started with --sandbox none,
# which leaves the isolation to the container itself.
RUN apt-get update \
 && apt-get install -y --no-install-recommends bubblewrap \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip install --no-cache-dir . && rm -rf /src

RUN useradd --create-home --uid 10001 gaia
USER 10001
WORKDIR /home/gaia
EXPOSE 24442
ENTRYPOINT ["gaia"]
CMD ["serve", "--host", "0.0.0.0", "--data", "/home/gaia/data"]

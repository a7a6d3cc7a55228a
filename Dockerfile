# The payment service's image: `payment-service serve` on port 8004, as an unprivileged user.
#
#   docker build -t payment-service .
#   docker run --rm -p 8004:8004 -e ORDER_DB_HOST=... payment-service
#   docker run --rm -e ORDER_DB_HOST=... payment-service payment-service migrate
#
# BASE is any Debian-like image whose `python3` is 3.11 or newer, with its venv module. The
# default is the official slim Python; `make smoke-image` stands in one built from Debian's
# packages (deploy/base-image). Neither stage installs a compiler: every dependency comes
# as a wheel, at the version and with the hash requirements/service.txt gives (`make lock`).
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/payment-service \
 && python3 -m venv /opt/build-backend
WORKDIR /build
# The dependencies alone first, from the locks (exact versions, every file checked against its
# hash): a change to the code reuses this layer. The build backend gets a venv of its own, left
# behind in this stage.
COPY requirements/pip.txt requirements/service.txt requirements/build.txt ./requirements/
RUN /opt/payment-service/bin/pip install --require-hashes --requirement requirements/pip.txt \
 && /opt/payment-service/bin/pip install --require-hashes --requirement requirements/service.txt \
 && /opt/build-backend/bin/pip install --require-hashes --requirement requirements/build.txt
COPY pyproject.toml README.md ./
COPY src ./src
COPY migrations ./migrations
RUN /opt/build-backend/bin/pip wheel --no-deps --no-build-isolation --wheel-dir dist . \
 && /opt/payment-service/bin/pip install --no-deps dist/*.whl \
 && /opt/payment-service/bin/pip uninstall --yes pip setuptools

FROM ${BASE}
LABEL org.opencontainers.image.title="payment-service" \
      org.opencontainers.image.description="Pays for orders exactly once: POST /pay on port 8004"
ENV PATH=/opt/payment-service/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --gid 10001 payment \
 && useradd --no-log-init --uid 10001 --gid payment --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin payment
COPY --from=build /opt/payment-service /opt/payment-service
# Nothing is written but under /tmp (the metrics of several workers): the root file system
# may be mounted read-only.
WORKDIR /tmp
USER 10001:10001
EXPOSE 8004
# /livez answers while the process runs and never touches the database; PAYMENT_PORT moves it.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PAYMENT_PORT', '8004') + '/livez', timeout=2)"]
CMD ["payment-service", "serve"]

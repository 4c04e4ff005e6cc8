# The Function App image: the Azure Functions Python 3.11 host plus the PostgreSQL client binaries
# (pg_dump, pg_restore, psql) of the Flexible Servers' major version, which the plain Python Functions
# image lacks. Build and publish: infra/README.md. Keep PG_MAJOR equal to postgresVersion in infra/.
FROM mcr.microsoft.com/azure-functions/python:4-python3.11

ARG PG_MAJOR=16

ENV AzureWebJobsScriptRoot=/home/site/wwwroot \
    AzureFunctionsJobHost__Logging__Console__IsEnabled=true \
    PG_BIN=/usr/lib/postgresql/${PG_MAJOR}/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The PostgreSQL project's apt repository (packaged by Debian's PostgreSQL maintainers) carries every
# supported major for the base image's Debian release; Debian's own archive carries only one. The server
# binaries rewind a server we run to a point in time in a throwaway cluster (continuity.pitr); libpq-dev and
# gcc build psycopg2, Barman's driver (requirements-barman.txt), then gcc goes.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl gnupg \
 && install -d /usr/share/postgresql-common/pgdg \
 && curl -fsSL -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc https://www.postgresql.org/media/keys/ACCC4CF8.asc \
 && . /etc/os-release \
 && echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt ${VERSION_CODENAME}-pgdg main" \
      > /etc/apt/sources.list.d/pgdg.list \
 && apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client-${PG_MAJOR} \
      postgresql-${PG_MAJOR} libpq-dev gcc \
 && apt-get purge -y --auto-remove curl gnupg \
 && rm -rf /var/lib/apt/lists/* \
 && "${PG_BIN}/pg_restore" --version

COPY requirements.txt requirements-barman.txt /tmp/
RUN pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt /tmp/requirements-barman.txt \
 && apt-get purge -y --auto-remove gcc && barman-cloud-restore --version

COPY . /home/site/wwwroot

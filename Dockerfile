# One image for the hub, the edges and the simulator: `citybrain hub|edge|sim`.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY citybrain ./citybrain
COPY seeds ./seeds
COPY firmware_sim ./firmware_sim
COPY edge ./edge
COPY hub ./hub
COPY bench ./bench
RUN pip install --no-cache-dir . && useradd --system --uid 10001 citybrain \
    && mkdir -p /data/wal /data/spool /data/cluster && chown -R citybrain /data
# Named volumes mounted on /data/* start with this ownership (WAL and spool are written here).
USER citybrain
# numba caches compiled kernels next to the code; give it a writable place instead.
ENV NUMBA_CACHE_DIR=/tmp/numba-cache PYTHONUNBUFFERED=1
ENTRYPOINT ["citybrain"]

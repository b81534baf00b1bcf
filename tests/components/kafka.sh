#!/usr/bin/env bash
# Fetch Apache Kafka's broker jars from Maven Central into an ignored cache folder, for the
# real single-node KRaft broker the event-bus tests start (tests/bus/kafka_broker.py).
#
#   tests/components/kafka.sh                 # fetch unless already present
#   GAIA_KAFKA_VERSION=3.9.1 GAIA_CACHE=/some/dir tests/components/kafka.sh
#
# Output: ${GAIA_CACHE:-<repo>/.cache}/kafka-<version>/libs/*.jar (broker, its runtime
# dependencies and an slf4j -> reload4j logging binding), and a "complete" marker.
# Kafka 3.9 is the last line with Java 11+ brokers; it runs on the machine's Java 17 and
# speaks every protocol version kafka-python uses. Needs `mvn` and `java` on PATH.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${GAIA_CACHE:-$REPO/.cache}"
VERSION="${GAIA_KAFKA_VERSION:-3.9.1}"
SLF4J_VERSION=1.7.36
OUT="$CACHE/kafka-$VERSION"

log() { printf '[kafka %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [[ -f "$OUT/complete" ]]; then
    log "kafka $VERSION already in $OUT"
    exit 0
fi
command -v mvn >/dev/null 2>&1 || { echo "kafka.sh: mvn (Maven) is needed to fetch the Kafka jars" >&2; exit 1; }
command -v java >/dev/null 2>&1 || { echo "kafka.sh: java is needed to run the Kafka broker" >&2; exit 1; }

mkdir -p "$CACHE"
if command -v flock >/dev/null 2>&1; then  # serialise concurrent runs
    exec 9>"$CACHE/.kafka.lock"
    flock 9
    [[ -f "$OUT/complete" ]] && exit 0
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/gaia-kafka.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
cat >"$WORK/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>gaia.test</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$VERSION</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-reload4j</artifactId>
      <version>$SLF4J_VERSION</version>
    </dependency>
  </dependencies>
</project>
POM

log "fetching org.apache.kafka:kafka_2.13:$VERSION and its runtime dependencies"
rm -rf "$OUT"
mvn -B -q -f "$WORK/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$OUT/libs" >"$WORK/mvn.log" 2>&1 \
    || { cat "$WORK/mvn.log" >&2; echo "kafka.sh: could not fetch the Kafka jars" >&2; exit 1; }
touch "$OUT/complete"
log "kafka $VERSION: $(ls "$OUT/libs" | wc -l) jars in $OUT/libs"

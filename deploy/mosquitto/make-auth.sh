#!/bin/sh
# The one-shot `mqtt-auth` service of docker-compose (runs as root in the citybrain image):
# writes the fleet's MQTT accounts into one volume per consumer, so that each container sees
# only what it needs:
#   /auth/secret  mqtt-secret     the fleet's provisioning secret: $CITYBRAIN_MQTT_SECRET if
#                                 set, else random on the first start and kept
#   /auth/broker  passwd, acl     Mosquitto's accounts (PBKDF2 hashes) and ACL; conf.d/ with
#                                 the TLS listener when certificates are given   (uid 1883)
#   /auth/hub     mqtt-password   the password of account "hub"                  (uid 10001)
#   /auth/edge    mqtt-password   the password of account "edge"                 (uid 10001)
#   /auth/sim     mqtt-secret     the simulator derives each device's password   (uid 10001)
# With ca.crt, server.crt and server.key in /certs (scripts/make_ca.sh deploy/mosquitto/certs)
# Mosquitto also listens with TLS on 8883 and hub, edge and sim get ca.crt.
set -eu

secret=/auth/secret/mqtt-secret
citybrain auth secret "$secret"
citybrain auth broker-files /auth/broker --mqtt-secret-file "$secret"
citybrain auth password hub --mqtt-secret-file "$secret" --out /auth/hub/mqtt-password
citybrain auth password edge --mqtt-secret-file "$secret" --out /auth/edge/mqtt-password
cp "$secret" /auth/sim/mqtt-secret

mkdir -p /auth/broker/conf.d
rm -f /auth/broker/conf.d/tls.conf /auth/broker/ca.crt /auth/broker/server.crt \
    /auth/broker/server.key /auth/hub/ca.crt /auth/edge/ca.crt /auth/sim/ca.crt
if [ -s /certs/ca.crt ] && [ -s /certs/server.crt ] && [ -s /certs/server.key ]; then
    cp /certs/ca.crt /certs/server.crt /certs/server.key /auth/broker/
    cat >/auth/broker/conf.d/tls.conf <<CONF
listener 8883 0.0.0.0
cafile /mosquitto/auth/ca.crt
certfile /mosquitto/auth/server.crt
keyfile /mosquitto/auth/server.key
CONF
    for tier in hub edge sim; do cp /certs/ca.crt "/auth/$tier/ca.crt"; done
    echo "mqtt-auth: TLS listener on 8883 (CA /certs/ca.crt)"
fi

chown -R 1883:1883 /auth/broker
chown -R 10001 /auth/hub /auth/edge /auth/sim
chmod -R go-rwx /auth/secret /auth/broker /auth/hub /auth/edge /auth/sim
echo "mqtt-auth: accounts ready"

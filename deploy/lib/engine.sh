# Docker engine on a bare Debian 12 host, started by hand (no systemd here) and stopped
# again leaving the host as it was.  Sourced by deploy/docker/*.sh and deploy/lab/*.sh.
#
#   engine_up STATE [dockerd args...]   install docker.io if missing, start dockerd unless one
#                                       answers already, record what dockerd will change
#   engine_down STATE                   stop the dockerd engine_up started (by pid), then put
#                                       back the iptables FORWARD policy, iptables rules,
#                                       ip_forward, and delete docker0
#
# A running dockerd sets the FORWARD policy to DROP and leaves its chains after it exits;
# the multi-host (network namespace) clusters route through the root namespace and need
# FORWARD ACCEPT. A dockerd that someone else started is used and left alone.
DOCKER=/usr/bin/docker   # Debian's client; a preinstalled /usr/local/bin/docker 28.x lacks buildx

engine_install() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v docker-compose >/dev/null || missing+=(docker-compose)
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "[engine] apt-get install ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

engine_up() {
    local state=$1; shift
    mkdir -p "$state"
    engine_install
    if $DOCKER info >/dev/null 2>&1; then
        echo "[engine] using the dockerd already running"
        return 0
    fi
    # Docker chains with no dockerd running are leftovers of an earlier engine (a killed
    # run): recording them as "before" would restore them (and FORWARD DROP) at the end
    if iptables-save 2>/dev/null | grep -q -- '-A FORWARD -j DOCKER'; then
        echo "[engine] dropping a previous dockerd's leftover iptables rules (FORWARD ACCEPT, ip_forward 0)"
        _engine_drop_docker_rules
        iptables -P FORWARD ACCEPT
        sysctl -q -w net.ipv4.ip_forward=0
    fi
    iptables-save > "$state/iptables.before" 2>/dev/null || : > "$state/iptables.before"
    (iptables -S FORWARD 2>/dev/null | head -1 | awk '{print $3}') > "$state/forward-policy.before"
    [ -s "$state/forward-policy.before" ] || echo ACCEPT > "$state/forward-policy.before"
    sysctl -n net.ipv4.ip_forward > "$state/ip_forward.before"
    nohup dockerd "$@" > "$state/dockerd.log" 2>&1 &
    echo $! > "$state/dockerd.pid"
    for _ in $(seq 60); do $DOCKER info >/dev/null 2>&1 && break; sleep 0.5; done
    $DOCKER info --format '[engine] dockerd {{.ServerVersion}} {{.Driver}}' || {
        echo "[engine] dockerd did not start:"; tail -20 "$state/dockerd.log"; return 1; }
}

engine_down() {
    local state=$1
    if [ -f "$state/dockerd.pid" ]; then
        local pid; pid=$(cat "$state/dockerd.pid")
        kill "$pid" 2>/dev/null
        for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
        rm -f "$state/dockerd.pid"
        # containerd that dockerd started exits with it; the shims of killed containers too
    fi
    ip link del docker0 2>/dev/null || true
    if [ -f "$state/iptables.before" ]; then
        if [ -s "$state/iptables.before" ]; then
            iptables-restore < "$state/iptables.before"
        else   # no rules before dockerd: drop the rules and chains it created, keep anyone else's
            local pass
            for pass in 1 2; do _engine_drop_docker_rules; sleep 1; done
        fi
        rm -f "$state/iptables.before"
    fi
    if [ -f "$state/forward-policy.before" ]; then
        iptables -P FORWARD "$(cat "$state/forward-policy.before")" 2>/dev/null
        rm -f "$state/forward-policy.before"
    fi
    if [ -f "$state/ip_forward.before" ]; then
        sysctl -q -w net.ipv4.ip_forward="$(cat "$state/ip_forward.before")"
        rm -f "$state/ip_forward.before"
    fi
    rm -f "$state/dockerd.log"; rmdir "$state" 2>/dev/null
    echo "[engine] host: $(iptables -S FORWARD 2>/dev/null | head -1), ip_forward $(sysctl -n net.ipv4.ip_forward)," \
         "docker0 $(ip link show docker0 >/dev/null 2>&1 && echo present || echo gone)," \
         "dockerd $(pgrep -x dockerd >/dev/null && echo running || echo stopped)"
}

# dockerd's own rules: those naming its chains, docker0, its bridges (br-*) or its subnets
_engine_drop_docker_rules() {
    local pat='DOCKER|docker0|br-|172\.1[6-9]\.|192\.168\.213\.'
    local t rule
    for t in filter nat; do
        iptables-save -t $t 2>/dev/null | grep -E '^-A (FORWARD|PREROUTING|OUTPUT|POSTROUTING|INPUT) ' |
            grep -E -- "$pat" | sed 's/^-A/-D/' | while read -r rule; do eval iptables -t $t $rule; done
        for c in DOCKER DOCKER-ISOLATION-STAGE-1 DOCKER-ISOLATION-STAGE-2 DOCKER-USER; do
            iptables -t $t -F $c 2>/dev/null; done
        for c in DOCKER DOCKER-ISOLATION-STAGE-1 DOCKER-ISOLATION-STAGE-2 DOCKER-USER; do
            iptables -t $t -X $c 2>/dev/null; done
    done
    return 0
}

# local/debian:bookworm, made with debootstrap from the host's own Debian mirror (no registry)
engine_base_image() {
    local img=${1:-skyhook/debian:bookworm}
    $DOCKER image inspect "$img" >/dev/null 2>&1 && { echo "[engine] $img exists"; return 0; }
    local r; r=$(mktemp -d /var/tmp/skyhook-rootfs.XXXX)
    local uris mirror sec
    uris=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
           | grep -oE '^(deb|URIs:) +[^ ]+' | awk '{print $2}' || true)
    mirror=$(echo "$uris" | grep -v security | head -1); sec=$(echo "$uris" | grep security | head -1)
    [ -n "$mirror" ] || { echo "[engine] no Debian mirror in /etc/apt/sources.list*"; rm -rf "$r"; return 1; }
    echo "[engine] debootstrap bookworm from $mirror"
    debootstrap --variant=minbase bookworm "$r" "$mirror" >/dev/null || { rm -rf "$r"; return 1; }
    { echo "deb $mirror bookworm main"; echo "deb $mirror bookworm-updates main"
      [ -n "$sec" ] && echo "deb $sec bookworm-security main"; } > "$r/etc/apt/sources.list"
    # HTTPS (PyPI) from containers goes through the host's TLS-inspecting egress: its CA bundle
    mkdir -p "$r/etc/ssl" && cp /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/host-ca-bundle.crt"
    printf 'APT::Install-Recommends "false";\n' > "$r/etc/apt/apt.conf.d/90norecommends"
    rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/*
    local b=/etc/ssl/host-ca-bundle.crt
    tar -C "$r" -c . | $DOCKER import -c "ENV SSL_CERT_FILE=$b" -c "ENV PIP_CERT=$b" \
        -c "ENV REQUESTS_CA_BUNDLE=$b" -c "ENV DEBIAN_FRONTEND=noninteractive" - "$img" >/dev/null
    rm -rf "$r"
}

#!/bin/sh
# A stand-in for `sluice run -c FILE` while developing the harness: reads the addresses out of the
# generated Sluice YAML and runs nginx doing the same job (proxy + admin /ready; adds x-bench when
# the config asks for a header). Use: cargo xtask bench --sluice-bin bench/standin-sluice.sh
# Not a benchmark of anything: the numbers are nginx's.
set -eu
[ "$1" = run ] && [ "$2" = -c ] || { echo "usage: $0 run -c FILE" >&2; exit 2; }
conf=$3
dir=$(dirname "$conf")/standin
mkdir -p "$dir"
admin=$(sed -n '/^admin:/,/^[a-z]/s/^  address: "\(.*\)"/\1/p' "$conf")
listen=$(sed -n 's/^    address: "\(.*\)"/\1/p' "$conf")
upstream=$(sed -n 's/^    endpoints: \["\(.*\)"\]/\1/p' "$conf")
header=""
grep -q x-bench "$conf" && header='add_header x-bench 1 always;'
cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 1000000;
    upstream backend { server $upstream; keepalive 64; keepalive_requests 1000000; }
    server {
        listen $listen;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            $header
        }
    }
    server { listen $admin; location = /ready { return 200 "ready\n"; } }
}
CONF
exec /usr/sbin/nginx -p "$dir/" -c "$dir/nginx.conf" -g 'daemon off;'

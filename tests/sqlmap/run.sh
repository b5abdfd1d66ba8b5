#!/bin/bash
# sqlmap against the web app of tests/scenarios/sql_drivers.rs, every technique, one
# PostgreSQL statement log per run, for the per-statement measurement:
#
#   sudo tests/sqlmap/run.sh OUT_DIR [RUN_NAME_FILTER]
#   RASP_SQLMAP_LOGS=OUT_DIR/logs cargo test --release -p rasp-agent --lib \
#       detect::sql::sqlmap -- --ignored --nocapture
#
# Starts a throw-away PostgreSQL 15 (Debian's, initdb as the postgres user, unix socket in
# OUT_DIR, log_statement=all into a jsonlog file), the app with psycopg2-binary from the
# venv `cargo xtask setup` makes (target/sql-drivers-venv), then runs Debian's sqlmap once
# per line of RUNS below and cuts the statements each run caused into OUT_DIR/logs/NAME.json
# (sqlmap's own output: OUT_DIR/runs/NAME.out). Needs root, sqlmap, openssl, PostgreSQL.
# Everything it starts is stopped when it exits.
set -euo pipefail

out=${1:?usage: run.sh OUT_DIR [RUN_NAME_FILTER]}
filter=${2:-}
root=$(cd "$(dirname "$0")/../.." && pwd)
python=$root/target/sql-drivers-venv/bin/python
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
[ "$(id -u)" = 0 ] || { echo "run.sh: needs root (initdb runs as the postgres user)" >&2; exit 1; }
for tool in sqlmap openssl runuser; do
    command -v $tool >/dev/null || { echo "run.sh: $tool is missing (Debian package $tool)" >&2; exit 1; }
done
[ -x "$python" ] || { echo "run.sh: $python is missing: run cargo xtask setup" >&2; exit 1; }
[ -x "$pgbin/initdb" ] || { echo "run.sh: no PostgreSQL under /usr/lib/postgresql" >&2; exit 1; }

mkdir -p "$out"/logs "$out"/runs "$out"/sqlmap "$out"/home
out=$(cd "$out" && pwd)
chmod 777 "$out"
data=$out/data
log=$out/pglog/statements.json
app_pid=
cleanup() {
    [ -n "$app_pid" ] && kill "$app_pid" 2>/dev/null || true
    runuser -u postgres -- "$pgbin/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

# statement_timeout: sqlmap's "heavy query" time probe (information_schema.columns cross
# joined three times) is valid PostgreSQL and would run for hours on one app connection.
rm -rf "$data" "$out/pglog"
runuser -u postgres -- "$pgbin/initdb" -A trust -U postgres -D "$data" >/dev/null
runuser -u postgres -- "$pgbin/pg_ctl" -D "$data" -l "$out/server.log" -w -o \
    "-k $out -c listen_addresses='' -c log_statement=all -c statement_timeout=20s -c logging_collector=on \
     -c log_destination=jsonlog -c log_rotation_size=0 -c log_directory=$out/pglog -c log_filename=statements" \
    start >/dev/null
psql -h "$out" -U postgres -X -q -c "
    CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, price int NOT NULL);
    INSERT INTO items (name, price) VALUES ('apple', 3), ('banana', 2), ('O''Reilly', 9);
    CREATE TABLE visits (who text, at timestamptz)"

# The app exactly as the scenario runs it.
sed -n '/^const APP: &str = r#"$/,/^"#;$/p' "$root/tests/scenarios/sql_drivers.rs" |
    sed '1d;$d' >"$out/app.py"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
    -keyout "$out/key.pem" -out "$out/cert.pem" 2>/dev/null
coproc APP { exec "$python" "$out/app.py" psycopg2 "$out" "$out/cert.pem" "$out/key.pem"; }
app_pid=$APP_PID
read -r imported <&"${APP[0]}"
echo go >&"${APP[1]}"
read -r listening port <&"${APP[0]}"
[ "$imported $listening" = "imported listening" ] || { echo "run.sh: the app said $imported $listening" >&2; exit 1; }
base=https://127.0.0.1:$port

deep="--level 5 --risk 3"
tampers=(
    "between,space2comment,charencode,randomcase"
    "space2dash,greatest,substring2leftright"
    "randomcomments,symboliclogical,equaltolike,space2randomblank"
    "between,commalesslimit,if2case,least,space2plus,unionalltounion"
)
# NAME|ENDPOINT?name=VALUE|sqlmap arguments
RUNS=()
for ep in "item?name=apple" "byid?name=1" "search?name=app" "sorted?name=name" "visit?name=bob"; do
    for t in B E U S T Q; do
        RUNS+=("${ep%%\?*}-$t|$ep|--technique=$t $deep")
    done
done
RUNS+=("item-enumerate|item?name=apple|--technique=BEUSTQ $deep --banner --current-user --dbs --tables --dump -T items")
RUNS+=("item-os-cmd|item?name=apple|--technique=S --os-cmd id")
for i in "${!tampers[@]}"; do
    RUNS+=("item-tamper$((i + 1))|item?name=apple|--technique=BEUSTQ $deep --tamper=${tampers[$i]}")
done
RUNS+=("safe-all|safe?name=apple|--technique=BEUSTQ $deep")

for run in "${RUNS[@]}"; do
    IFS='|' read -r name target args <<<"$run"
    [[ -z "$filter" || "$name" == *$filter* ]] || continue
    before=$(wc -l <"$log")
    started=$(date +%s)
    # --disable-precon: sqlmap's pre-opened connections wait for their TLS handshake while
    # the app's single-threaded server blocks on them (a 30 s stall, then "can't establish
    # SSL connection").
    # shellcheck disable=SC2086 # the arguments are words
    HOME=$out/home timeout --foreground 1800 sqlmap -u "$base/$target" -p name --batch --flush-session \
        --disable-precon --disable-coloring --output-dir="$out/sqlmap/$name" $args >"$out/runs/$name.out" 2>&1 || true
    sleep 1
    after=$(wc -l <"$log")
    sed -n "$((before + 1)),${after}p" "$log" >"$out/logs/$name.json"
    echo "$name: $((after - before)) log records, $(($(date +%s) - started)) s:" \
        "sqlmap -u '$base/$target' -p name --batch --flush-session --disable-precon $args" | tee -a "$out/runs/summary.txt"
done

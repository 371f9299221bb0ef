#!/usr/bin/env bash
# Re-fetch the vendored front-end assets from the npm registry at pinned versions.
# The files are committed, so CI and `make run` need no npm; run this only to upgrade
# (edit the versions, run it from anywhere, review the diff, commit).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm init -y >/dev/null
npm install --no-audit --no-fund --ignore-scripts \
  htmx.org@2.0.11 htmx-ext-sse@2.2.4 uplot@1.6.32 swagger-ui-dist@5.35.0 redoc@2.5.4
m=node_modules
copy() { mkdir -p "$here/$1"; shift_dir="$1"; shift; for f in "$@"; do cp "$f" "$here/$shift_dir/"; done; }
copy htmx "$m/htmx.org/dist/htmx.min.js" "$m/htmx.org/LICENSE"
copy htmx-ext-sse "$m/htmx-ext-sse/sse.js" "$m/htmx-ext-sse/LICENSE"
copy uplot "$m/uplot/dist/uPlot.iife.min.js" "$m/uplot/dist/uPlot.min.css" "$m/uplot/LICENSE"
copy swagger-ui "$m/swagger-ui-dist/swagger-ui-bundle.js" "$m/swagger-ui-dist/swagger-ui.css" \
  "$m/swagger-ui-dist/favicon-32x32.png" "$m/swagger-ui-dist/LICENSE" "$m/swagger-ui-dist/NOTICE"
copy redoc "$m/redoc/bundles/redoc.standalone.js" "$m/redoc/LICENSE"
for p in htmx.org htmx-ext-sse uplot swagger-ui-dist redoc; do
  node -e "const p=require('./$m/$p/package.json'); console.log(p.name+'@'+p.version+' '+(p.license||''))"
done > "$here/VERSIONS.txt"
echo "vendored into $here:"; cat "$here/VERSIONS.txt"

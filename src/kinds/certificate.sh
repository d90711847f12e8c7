# shellcheck shell=sh
# The certificate kind's shell: the records its probe fragment prints and the functions its steps
# call. Sent after the probe and apply libraries (src/vocab/probe.sh, src/apply/lib.sh) to hosts
# that have a certificate resource.

# pl_cert TAG PATH: the certificate itself (public), base64 on one line.
pl_cert() {
  if [ -f "$2" ] && [ ! -L "$2" ]; then printf '%s.pem\t%s\n' "$1" "$(base64 -w0 < "$2")"; else printf '%s.pem\tabsent\n' "$1"; fi
}

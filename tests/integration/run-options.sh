#!/usr/bin/env bash
# vtool run's command line: qemu options vtool lacks say "not supported yet", other names
# say "invalid option" with the nearest name or the spelled-out glued form, -smp follows
# qemu's topology rules and messages (and names the maximum), -help/-version work, and
# (table-driven) every option vtool accepts changes the configuration or is refused,
# unless --help says why it has nothing to do. No VM is started.
. "$(dirname "$0")/lib.sh"

# msg WANT-REGEX ARGS...: vtool run ARGS fails with exit 1 and this one-line message.
msg() {
  local want=$1; shift
  local rc=0
  "$VTOOL" run "$@" >"$T/out" 2>"$T/err" </dev/null || rc=$?
  if [ "$rc" -eq 1 ] && [ "$(wc -l <"$T/err")" -eq 1 ] && grep -Eq -- "$want" "$T/err"; then
    pass
  else
    fail "vtool run $*: rc $rc, want 1 and /$want/: $(head -c 300 "$T/err")"
  fi
}

# --- options qemu has and vtool lacks: every one, from the list --help prints ----------
"$VTOOL" run --help >"$T/help"
sed -n '/options vtool lacks/,/^$/p' "$T/help" | tail -n +2 | tr ',' '\n' |
  sed 's/^ *//; s/ *$//' | grep '^-' >"$T/lacks"
n=$(wc -l <"$T/lacks")
if [ "$n" -gt 50 ]; then pass; else fail "--help lists only $n unsupported options"; fi
while read -r opt; do
  msg "^vtool: $opt: not supported yet: $opt$" "$opt" x
done <"$T/lacks"
# the ones the issue named, among them
for opt in -s -gdb -nic -fda -usbdevice -usb; do
  grep -qx -- "$opt" "$T/lacks" && pass || fail "$opt is not in --help's unsupported list"
done
msg "^vtool: -localtime: not supported \(qemu removed it too; instead: -rtc base=localtime\)$" -localtime

# --- typos: the nearest name; glued options spelled out --------------------------------
msg "^vtool: -frobnicate: invalid option$" -frobnicate
msg "^vtool: --no-such-option: invalid option$" --no-such-option
msg "^vtool: -nettap,ifname=tap0,script=no: invalid option; did you mean '-net tap,ifname=tap0,script=no'\?$" \
  -nettap,ifname=tap0,script=no
msg "^vtool: -cdromubuntu.iso: invalid option; did you mean '-cdrom ubuntu.iso'\?$" -cdromubuntu.iso
msg "^vtool: -netdevtap,id=n0: invalid option; did you mean '-netdev tap,id=n0'\?$" -netdevtap,id=n0
msg "^vtool: -m512: invalid option; did you mean '-m 512'\?$" -m512
msg "^vtool: -kernal: invalid option; did you mean '-kernel'\?$" -kernal x
msg "^vtool: -nograhpic: invalid option; did you mean '-nographic'\?$" -nograhpic
msg "^vtool: -enable-kv: invalid option; did you mean '-enable-kvm'\?$" -enable-kv
msg "^vtool: -smpp: invalid option; did you mean '-smp'\?$" -smpp 2
msg "^vtool: -kernel: requires an argument$" -kernel

# --- -smp: qemu's topology rules and messages; the maximum is named -------------------
msg "^vtool: -smp: Invalid SMP CPUs 9999. The max CPUs supported by machine 'pc' is 64$" -smp 9999
msg "^vtool: -smp: Invalid SMP CPUs 65. The max CPUs supported by machine 'pc' is 64$" -smp 65
msg "^vtool: -smp: Invalid CPU topology: product of the hierarchy must match maxcpus: sockets \(3\) \* dies \(1\) \* cores \(0\) \* threads \(1\) != maxcpus \(2\)$" \
  -smp cpus=2,sockets=3
msg "^vtool: -smp: Invalid CPU topology: product of the hierarchy must match maxcpus: sockets \(2\) \* dies \(1\) \* cores \(2\) \* threads \(2\) != maxcpus \(4\)$" \
  -smp cpus=4,sockets=2,cores=2,threads=2
msg "^vtool: -smp: Invalid CPU topology: maxcpus must be equal to or greater than smp: sockets \(1\) \* dies \(1\) \* cores \(2\) \* threads \(1\) == maxcpus \(2\) < smp_cpus \(4\)$" \
  -smp 4,maxcpus=2
msg "^vtool: -smp: Invalid CPU topology: CPU topology parameters must be greater than zero$" -smp cpus=0
msg "^vtool: -smp: clusters > 1 not supported by this machine's CPU topology$" -smp 2,clusters=2
msg "^vtool: -smp: not supported yet: maxcpus=8 above cpus=4 \(CPU hot-plug\)$" -smp 4,maxcpus=8
# ... and qemu says the same where the rules match (7.2 is the peer)
if command -v qemu-system-x86_64 >/dev/null; then
  for a in "cpus=2,sockets=3" "cpus=4,sockets=2,cores=2,threads=2" "4,maxcpus=2"; do
    q=$(timeout 10 qemu-system-x86_64 -machine pc,accel=tcg -display none -nodefaults -S \
          -smp "$a" 2>&1 </dev/null | head -1 |
        sed 's/^qemu-system-x86_64: //')
    v=$("$VTOOL" run -smp "$a" 2>&1 | sed 's/^vtool: -smp: //')
    [ "$q" = "$v" ] && pass || fail "-smp $a: vtool '$v' vs qemu '$q'"
  done
fi
# valid topologies are kept
VTOOL_RUN_DUMP_CONFIG=1 "$VTOOL" run -smp 8,sockets=2,threads=2 >"$T/d"
expect_grep '^nr_vcpus=8$' "$T/d"
expect_grep '^topo=2/1/2/2/8$' "$T/d"

# --- -help, -version, --version ------------------------------------------------------
for a in -help --help -h; do
  expect_rc 0 "$VTOOL" run $a
  expect_grep '^Usage: vtool run' "$T/out"
done
for a in -version --version; do
  expect_rc 0 "$VTOOL" run $a
  expect_grep '^vtool version [0-9]' "$T/out"
done
expect_grep 'not supported' "$T/help"

# --- no accepted option is silently ignored (table-driven) ---------------------------
# Each row: an option as given, then what it must do:
#   changes    the configuration dump differs from the baseline's
#   help WORD  nothing to configure (vtool's one behaviour already): --help says so
#   refused RE refused with this message
K="$T/k.elf"; : >"$K"
cat >"$T/rows" <<EOF
-M pc|help -machine pc
-machine pc,graphics=off|changes
-machine pc,usb=on|refused not supported yet: usb=on
-machine pc,vmport=off|help -machine pc
-S|changes
-accel kvm|help -accel kvm
-append x=1|changes
-bios $K|changes
-boot d|changes
-boot order=c,menu=on,splash-time=5,reboot-timeout=100,strict=on|changes
-cdrom $K|changes
-chardev file,id=d0,path=$T/d0|changes
-chardev socket,id=m0,path=$T/m0,server=on,wait=off|changes
-chardev stdio,id=s0|changes
-chardev pty,id=p0|refused not supported yet: backend 'pty'
-chroot /|changes
-cpu host,-cx16|changes
-daemonize -serial none|changes
-debugcon file:$T/dc|changes
-device isa-debug-exit|changes
-device isa-debugcon,chardev=d0 -chardev file,id=d0,path=$T/dc|changes
-drive file=$K,if=none,id=d1 -device ide-hd,drive=d1,serial=S1,id=disk1|changes
-device virtio-net-pci,netdev=n0,mac=52:54:00:00:00:09 -netdev tap,id=n0,ifname=t0|changes
-device virtio-net-pci,netdev=n0,frob=1 -netdev tap,id=n0,ifname=t0|refused bad parameter 'frob'
-device e1000|refused 'e1000' is not a supported device
-display none|help -display none
-drive file=$K,format=raw,if=virtio,cache=none,discard=unmap,readonly=on,snapshot=on|changes
-drive file=$K,aio=threads|help aio=threads
-drive file=$K,aio=native|refused not supported yet: aio=native
-enable-kvm|help -enable-kvm
-global isa-debugcon.iobase=0x402|changes
-h|help -help
-hda $K|changes
-hdb $K|changes
-hdc $K|changes
-hdd $K|changes
-help|help -help
-initrd $K|changes
-k de|changes
-kernel $T/other.elf|changes
-m 256|changes
-m 256,slots=2,maxmem=1G|refused not supported yet: slots=
-mon chardev=m0,mode=control -chardev socket,id=m0,path=$T/m0,server=on,wait=off|changes
-monitor none|changes
-monitor unix:$T/h.sock,server=on,wait=off|changes
-name vm1,process=vm1proc,debug-threads=on|changes
-net nic -net tap,ifname=t0,script=no,downscript=no|changes
-net tap,ifname=t0,vhost=on -net nic|refused not supported yet: vhost=on
-net none|help -net none
-netdev tap,id=n0,ifname=t0 -device virtio-net-pci,netdev=n0|changes
-no-hpet|help -no-hpet
-no-reboot|changes
-no-shutdown|changes
-nodefaults|changes
-nographic|changes
-pidfile $T/pid|changes
-qmp unix:$T/q.sock,server=on,wait=off|changes
-qmp tcp:127.0.0.1:4444,server,nowait|changes
-qmp unix:$T/q.sock|refused not supported yet: a monitor socket that connects out
-qmp-pretty unix:$T/q.sock,server=on,wait=off|changes
-rtc base=localtime,clock=host,driftfix=none|changes
-rtc base=utc,driftfix=slew|refused not supported yet: driftfix=slew
-runas nobody|changes
-sandbox off|changes
-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny|changes
-sandbox on,spawn=allow|refused always denies
-serial file:$T/s|changes
-serial mon:stdio|changes
-smp 2|changes
-snapshot|changes
-uuid 12345678-1234-1234-1234-123456789abc|changes
-version|help -version
-vga none|changes
-vga std|changes
-global VGA.vgamem_mb=32|changes
-vnc :1|changes
-display vnc=:1|changes
-object secret,id=s0,data=x|changes
EOF
VTOOL_RUN_DUMP_CONFIG=1 "$VTOOL" run -kernel "$K" >"$T/base"
# every accepted option has a row
VTOOL_RUN_DUMP_CONFIG=options "$VTOOL" run >"$T/accepted"
while read -r opt; do
  grep -q -- "^$opt[ |]" "$T/rows" && pass || fail "$opt: accepted, but no row in the table"
done <"$T/accepted"
while IFS='|' read -r args what; do
  rc=0
  # shellcheck disable=SC2086
  VTOOL_RUN_DUMP_CONFIG=1 "$VTOOL" run -kernel "$K" $args >"$T/dump" 2>"$T/err" </dev/null || rc=$?
  case "$what" in
    changes)
      if [ "$rc" -eq 0 ] && ! cmp -s "$T/base" "$T/dump"; then pass
      else fail "'$args' changes nothing in the configuration (rc $rc: $(head -c 200 "$T/err"))"; fi ;;
    help\ *)
      word=${what#help }
      if [ "$rc" -eq 0 ] && grep -qF -- "$word" "$T/help"; then pass
      else fail "'$args': rc $rc, or --help does not explain '$word'"; fi ;;
    refused\ *)
      re=${what#refused }
      if [ "$rc" -eq 1 ] && grep -qF -- "$re" "$T/err"; then pass
      else fail "'$args': rc $rc, want refusal '$re': $(head -c 200 "$T/err")"; fi ;;
  esac
done <"$T/rows"
finish

#!/bin/sh
# Lays out the build context of the container image in DIR: the Containerfile
# and rootfs/ with the binary at /threadtrace and every shared library it
# links, at the paths the dynamic loader looks for them (as ldd lists them),
# plus the empty directories the runtime mounts over.
#
#   deploy/container/context.sh BINARY DIR
set -eu
if [ $# -ne 2 ]; then
    echo "usage: $0 BINARY DIR" >&2
    exit 2
fi
bin=$1
dir=$2
here=$(dirname "$0")
rm -rf "$dir"
mkdir -p "$dir/rootfs"
install -m 0755 "$bin" "$dir/rootfs/threadtrace"
# The release profile keeps debug info (41 MB of the 48): the image does
# not need it; symbols stay, for a readable panic.
strip --strip-debug "$dir/rootfs/threadtrace"
# "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and the loader's
# own "/lib64/ld-linux-x86-64.so.2 (0x...)"; linux-vdso has no file.
libs=$(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
if [ -z "$libs" ]; then
    echo "$0: ldd found no library in $bin" >&2
    exit 1
fi
for lib in $libs; do
    mkdir -p "$dir/rootfs$(dirname "$lib")"
    # The file itself, not a link into a tree the image does not have.
    cp -L "$lib" "$dir/rootfs$lib"
done
for d in proc sys tmp var/log/pods var/log/containers; do
    mkdir -p "$dir/rootfs/$d"
done
chmod 1777 "$dir/rootfs/tmp"
cp "$here/Containerfile" "$dir/Containerfile"

# device-env: sourced by the device scripts — unpack the carried Debian -dev libraries (.deps/debs,
# from `scripts/deps.sh --debs`) into a sysroot when the GPU image lacks them, and point the
# compiler, pkg-config and the loader at it. Sets PKGCFG (a CMake argument) when it did.
PKGCFG=${PKGCFG:-}
if ! pkg-config --exists libcjson 2>/dev/null && [ -d .deps/debs ]; then
  SR=/tmp/mq-sysroot; mkdir -p $SR
  for f in .deps/debs/*.deb; do dpkg -x "$f" $SR; done
  # the .pc files name private deps (gnutls...) the image lacks; dynamic linking does not need them
  sed -i '/^Requires.private/d' $SR/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc
  export LD_LIBRARY_PATH=$SR/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export PKG_CONFIG_PATH=$SR/usr/lib/x86_64-linux-gnu/pkgconfig:$SR/usr/share/pkgconfig
  export PKG_CONFIG_SYSROOT_DIR=$SR
  export CPATH=$SR/usr/include${CPATH:+:$CPATH} LIBRARY_PATH=$SR/usr/lib/x86_64-linux-gnu
  PKGCFG="-DPKG_CONFIG_EXECUTABLE=$SR/usr/bin/pkgconf"
fi

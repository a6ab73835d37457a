#!/bin/sh
# Install Debian's dataset-fashion-mnist (IDX files in /usr/share/datasets/fashion-mnist) when it is
# missing and apt is usable; otherwise say how to provide the data. Never fails the build by itself:
# `make test` then fails in the tests that need the data, with the same advice.
set -u
DIR=/usr/share/datasets/fashion-mnist
if [ -f "$DIR/train-images-idx3-ubyte.gz" ]; then
    exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO="none"; fi
    if [ "$SUDO" != "none" ]; then
        echo "installing Debian's dataset-fashion-mnist ..."
        $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
            || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }
        [ -f "$DIR/train-images-idx3-ubyte.gz" ] && exit 0
    fi
fi
echo "Fashion-MNIST is not installed in $DIR and could not be installed with apt." >&2
echo "Install it (sudo apt-get install dataset-fashion-mnist), or set data.root / NDKD_DATA to a folder with the IDX files." >&2
exit 0

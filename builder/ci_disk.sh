#!/usr/bin/env bash
# Give Docker NEED_GB of free disk on a GitHub-hosted Ubuntu runner, or fail saying what there is.
#
#   builder/ci_disk.sh NEED_GB        (NEED_GB: builder/disk_budget.py --need VARIANT BAKE_WEIGHTS)
#
# Hosted runners come in two layouts, changed without notice: one disk of about 145 GB (about 86 GB
# free), or a 72 GB / with 20-28 GB free plus a 75 GB /mnt with about 66 GB free. This removes
# preinstalled toolchains the image build never uses from / (about 30 GB), then gives Docker the
# filesystem with enough room; when neither has NEED_GB but both together do, it joins one file on
# each into an LVM volume (as easimon/maximize-build-space does). Docker is restarted on its new
# data root before docker/setup-buildx-action creates the builder. Needs sudo, jq and lvm2.
set -euo pipefail

need=${1:?usage: ci_disk.sh NEED_GB}
reserve=3  # GB left on each filesystem for the runner itself

sudo rm -rf /usr/share/dotnet /usr/local/lib/android /opt/ghc /usr/local/.ghcup /opt/hostedtoolcache/CodeQL \
  /usr/local/share/boost /usr/share/swift /usr/local/share/powershell
sudo docker system prune --all --force >/dev/null

free_gb() { df --output=avail -BG "$1" | tail -n 1 | tr -dc '0-9'; }
root_free=$(free_gb /)
mnt_free=0
if mountpoint -q /mnt && [ "$(stat -c %d /mnt)" != "$(stat -c %d /)" ]; then
  mnt_free=$(free_gb /mnt)
fi
echo "free: / ${root_free} GB, a separate /mnt ${mnt_free} GB; the build needs ${need} GB"

data_root=/var/lib/docker
if [ "$root_free" -ge $((need + reserve)) ]; then
  :
elif [ "$mnt_free" -ge $((need + reserve)) ]; then
  data_root=/mnt/docker
elif [ $((root_free + mnt_free - 2 * reserve)) -ge "$need" ]; then
  data_root=/docker-data
  sudo fallocate -l "$((root_free - reserve))G" /docker-root.img
  sudo fallocate -l "$((mnt_free - reserve))G" /mnt/docker-mnt.img
  root_loop=$(sudo losetup --find --show /docker-root.img)
  mnt_loop=$(sudo losetup --find --show /mnt/docker-mnt.img)
  sudo pvcreate -q "$root_loop" "$mnt_loop"
  sudo vgcreate -q docker-vg "$root_loop" "$mnt_loop"
  sudo lvcreate -q -y -l 100%FREE -n data docker-vg
  sudo mkfs.ext4 -q -m 0 /dev/docker-vg/data
  sudo mkdir -p "$data_root"
  sudo mount /dev/docker-vg/data "$data_root"
else
  echo "ci_disk.sh: the build needs ${need} GB; / has ${root_free} GB and /mnt ${mnt_free} GB free" >&2
  exit 1
fi

if [ "$data_root" != /var/lib/docker ]; then
  sudo systemctl stop docker docker.socket
  config=/etc/docker/daemon.json
  current=$(sudo cat "$config" 2>/dev/null || true)
  [ -n "$current" ] || current='{}'
  jq --arg root "$data_root" '. + {"data-root": $root}' <<<"$current" | sudo tee "$config" >/dev/null
  sudo mkdir -p "$data_root"
  sudo systemctl start docker
fi
have=$(free_gb "$data_root")
echo "docker data root: $data_root, ${have} GB free"
if [ "$have" -lt "$need" ]; then
  echo "ci_disk.sh: ${have} GB free for Docker, the build needs ${need} GB" >&2
  exit 1
fi

#!/bin/bash
# Stage 2: the root directory into one GPT disk image that boots with BIOS and UEFI, without loop devices or
# mounts: p1 BIOS boot partition (GRUB core.img), p2 EFI system partition (GRUB as the removable-media
# BOOTX64.EFI, plus appliance/firstboot.conf.example for the operator), p3 ext4 root (grown to the disk on
# first boot by systemd-repart and growfs).
. "$(dirname "$0")/common.sh"
[ -d "$ROOTFS/etc" ] || { echo "run rootfs.sh first" >&2; exit 1; }
W=$OUT/work
rm -rf "$W"; mkdir -p "$W"
IMG=$OUT/voxtap.img
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(stat -c %Y "$ROOTFS/etc/hostname")}
export E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH
ROOT_UUID=${ROOT_UUID:-$(cat /proc/sys/kernel/random/uuid)}
ESP_ID=${ESP_ID:-$(printf %s "$ROOT_UUID" | sha256sum | cut -c1-8 | tr a-f A-F)}
ESP_UUID="${ESP_ID:0:4}-${ESP_ID:4:4}"
ESP_MIB=100
# Partition and disk GUIDs follow from ROOT_UUID, so a given root directory gives the same table.
guid() { printf %s "$ROOT_UUID$1" | sha256sum | sed -E 's/^(.{8})(.{4})(.{4})(.{4})(.{12}).*/\1-\2-\3-\4-\5/'; }
CMDLINE=${CMDLINE:-"ro console=tty0 console=ttyS0,115200n8"}

mkdir -p "$ROOTFS/boot/grub" "$ROOTFS/boot/efi"
cat > "$ROOTFS/etc/fstab" <<FSTAB
UUID=$ROOT_UUID / ext4 defaults,x-systemd.growfs 0 1
UUID=$ESP_UUID /boot/efi vfat umask=0077,nofail 0 2
FSTAB
# Debian keeps /vmlinuz and /initrd.img pointing at the current kernel, so this file never needs updating.
cat > "$ROOTFS/boot/grub/grub.cfg" <<CFG
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
set timeout=2
search --no-floppy --fs-uuid --set=root $ROOT_UUID
# CPU isolation and 1G hugepages from /etc/voxtap/appliance.conf (voxtap-appliance writes this file).
set voxtap_cmdline=""
if [ -f /boot/grub/voxtap.cfg ]; then source /boot/grub/voxtap.cfg; fi
# A menu entry runs in a context of its own, which sees exported variables only.
export voxtap_cmdline
menuentry 'voxtap appliance' {
  linux /vmlinuz root=UUID=$ROOT_UUID $CMDLINE \$voxtap_cmdline
  initrd /initrd.img
}
menuentry 'voxtap appliance (previous kernel)' {
  linux /vmlinuz.old root=UUID=$ROOT_UUID $CMDLINE \$voxtap_cmdline
  initrd /initrd.img.old
}
CFG
printf 'search --no-floppy --fs-uuid --set=root %s\nset prefix=($root)/boot/grub\n' "$ROOT_UUID" > "$W/early.cfg"
MODS="part_gpt part_msdos ext2 fat search search_fs_uuid normal configfile linux echo test serial terminal gzio minicmd sleep reboot halt"
grub-mkimage -O i386-pc -o "$W/core.img" -p /boot/grub -c "$W/early.cfg" biosdisk $MODS
grub-mkimage -O x86_64-efi -o "$W/BOOTX64.EFI" -p /boot/grub -c "$W/early.cfg" efi_gop efi_uga $MODS

find "$ROOTFS" -xdev -newermt "@$SOURCE_DATE_EPOCH" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
ROOT_MIB=$(( $(du -sm "$ROOTFS" | cut -f1) * 120 / 100 + 256 ))
mkfs.ext4 -q -F -L root -U "$ROOT_UUID" -E hash_seed="$ROOT_UUID" -d "$ROOTFS" "$W/root.ext4" "${ROOT_MIB}M"
mkfs.vfat --invariant -C -F 32 -n ESP -i "$ESP_ID" "$W/esp.img" $((ESP_MIB * 1024)) > /dev/null
export MTOOLS_SKIP_CHECK=1
mkdir -p "$W/esp/EFI/BOOT" "$W/esp/appliance"
cp "$W/BOOTX64.EFI" "$W/esp/EFI/BOOT/BOOTX64.EFI"
cp "$HERE/firstboot.conf.example" "$W/esp/appliance/firstboot.conf.example"
find "$W/esp" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mcopy -s -m -i "$W/esp.img" "$W/esp/EFI" "$W/esp/appliance" ::/

TOTAL_MIB=$(( 2 + ESP_MIB + ROOT_MIB + 1 ))
rm -f "$IMG"; truncate -s "${TOTAL_MIB}M" "$IMG"
sfdisk -q "$IMG" <<PT
label: gpt
label-id: $(guid disk)
start=1MiB, size=1MiB, type=21686148-6449-6E6F-744E-656564454649, uuid=$(guid p1), name=bios
start=2MiB, size=${ESP_MIB}MiB, type=C12A7328-F81D-11D2-BA4B-00A0C93EC93B, uuid=$(guid p2), name=esp
start=$((2 + ESP_MIB))MiB, size=${ROOT_MIB}MiB, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=$(guid p3), name=root
PT
dd if="$W/esp.img" of="$IMG" bs=1M seek=2 conv=notrunc,sparse status=none
dd if="$W/root.ext4" of="$IMG" bs=1M seek=$((2 + ESP_MIB)) conv=notrunc,sparse status=none
# grub-bios-setup will not work on a plain file ("guessing the root device failed"): embed by hand.
python3 "$HERE/bios-embed.py" "$IMG" /usr/lib/grub/i386-pc/boot.img "$W/core.img" 2048
# Some BIOSes boot a GPT disk only when the protective MBR entry is marked active.
sfdisk -q --label-nested dos --activate "$IMG" 1 || true
rm -rf "$W"
ls -ls "$IMG"

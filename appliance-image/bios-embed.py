#!/usr/bin/env python3
"""Puts GRUB's i386-pc boot.img into a disk image's MBR and core.img into its BIOS boot partition, as
grub-bios-setup does for a real disk (which it refuses for a plain file).

usage: bios-embed.py IMAGE BOOT_IMG CORE_IMG LBA

Offsets are GRUB's (include/grub/i386/pc/boot.h): the kernel sector at 0x5c, the drive check at 0x66, and the
first blocklist of core.img's diskboot sector at 0x1f4 (start, length, segment)."""
import struct
import sys


def main(image, boot_path, core_path, lba):
    boot = bytearray(open(boot_path, "rb").read())
    if len(boot) != 512:
        sys.exit(f"{boot_path}: expected 512 bytes")
    core = bytearray(open(core_path, "rb").read())
    core += b"\0" * (-len(core) % 512)
    sectors = len(core) // 512
    with open(image, "r+b") as f:
        mbr = f.read(512)
        boot[0x03:0x5A] = mbr[0x03:0x5A]  # BIOS parameter block area, as found
        boot[0x1B8:0x200] = mbr[0x1B8:0x200]  # disk signature, partition table, 55 AA
        boot[0x5C:0x64] = struct.pack("<Q", lba)
        boot[0x66:0x68] = b"\x90\x90"  # a hard disk: skip the check for broken BIOS drive numbers
        _, _, segment = struct.unpack_from("<QHH", core, 0x200 - 12)
        struct.pack_into("<QHH", core, 0x200 - 12, lba + 1, sectors - 1, segment)
        f.seek(0)
        f.write(boot)
        f.seek(lba * 512)
        f.write(core)
    print(f"boot.img -> MBR; core.img ({sectors} sectors) -> LBA {lba}")


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))

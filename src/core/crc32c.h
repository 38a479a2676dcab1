/* CRC-32C (Castagnoli): the checksum of csm's write-ahead log. The
 * reflected polynomial 0x82F63B78 (0x1EDC6F41 unreflected), initial value
 * and final xor 0xFFFFFFFF, as iSCSI and ext4 use it; the check value of
 * "123456789" is 0xE3069283. */
#ifndef CSM_CORE_CRC32C_H
#define CSM_CORE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* The CRC-32C of n bytes, continued from crc (0 to start):
 * csm_crc32c(b, m, csm_crc32c(a, n, 0)) is the CRC of a then b. */
uint32_t csm_crc32c(const void *bytes, size_t n, uint32_t crc);

#endif

/* CRC-32C by slicing-by-8 (crc32c.h). The tables are made on first use:
 * filling them twice from two threads writes the same words, so no lock. */
#include "crc32c.h"

#define POLY 0x82F63B78u

static uint32_t table[8][256];
static volatile int ready;

static void make_tables(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (POLY & (0u - (c & 1u)));
        table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xFF];
    ready = 1;
}

uint32_t csm_crc32c(const void *bytes, size_t n, uint32_t crc)
{
    if (!ready)
        make_tables();
    const unsigned char *p = bytes;
    uint32_t c = ~crc;
    while (n >= 8) {
        /* byte by byte assembly keeps it independent of alignment and endianness */
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                           (uint32_t)p[3] << 24);
        c = table[7][lo & 0xFF] ^ table[6][(lo >> 8) & 0xFF] ^ table[5][(lo >> 16) & 0xFF] ^
            table[4][lo >> 24] ^ table[3][p[4]] ^ table[2][p[5]] ^ table[1][p[6]] ^
            table[0][p[7]];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = (c >> 8) ^ table[0][(c ^ *p++) & 0xFF];
    return ~c;
}

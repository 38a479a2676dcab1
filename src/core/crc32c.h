/* placeholder */
#ifndef CSM_CRC32C_H
#define CSM_CRC32C_H
#endif

/* placeholder */
#include "crc32c.h"

/* placeholder */
#ifndef CSM_CODEC_H
#define CSM_CODEC_H
#endif

// The one STB_IMAGE_IMPLEMENTATION of the program (Sean Barrett's public-domain stb_image, from
// Debian's libstb-dev): PNG, JPEG and BMP decoding for folder data sets (data_folder.cpp). Alone in
// its file so that its warnings stay here and the fuzz build (tools/fuzz.sh) can tell stb's own
// undefined behaviour (memcpy from a null buffer of 0 bytes on an empty PNG chunk) from ours.
// Not evo code: nothing else belongs in this file.
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_FAILURE_USERMSG
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-function"
#include <stb/stb_image.h>
#pragma GCC diagnostic pop

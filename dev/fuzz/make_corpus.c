// Writes the fuzz targets' seed inputs, a few small valid files each, with the writers
// the programs use: make fuzz-corpus runs it, and the results are committed under
// dev/fuzz/corpus/<target>/ (make test checks that each still reads).
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>
#include "utils/paths.h"
#include "utils/checkpoint.h"
#include "utils/token_shard.h"
#include "utils/image_shard.h"
#include "utils/vocab.h"

static char path_buf[512];
static const char* corpus(const char* target, const char* name) {
    snprintf(path_buf, sizeof(path_buf), "dev/fuzz/corpus/%s/%s", target, name);
    make_parent_dirs(path_buf);
    return path_buf;
}

static void write_text(const char* path, const char* text) {
    FILE* f = fopen_check(path, "wb");
    fwrite_check(text, 1, strlen(text), f, path);
    fclose_check(f, path);
}

int main(void) {
    uint32_t tokens[24];
    for (int i = 0; i < 24; i++) tokens[i] = (uint32_t)(i * 7 % 20);
    token_shard_write(corpus("token_shard", "uint16.bin"), tokens, 24, 20);
    tokens[3] = 70000;
    token_shard_write(corpus("token_shard", "uint32.bin"), tokens, 8, 267744);

    uint8_t pixels[3 * 4 * 4 * 3];
    for (int i = 0; i < (int)sizeof(pixels); i++) pixels[i] = (uint8_t)(i * 37);
    int32_t labels[3] = {2, 0, 1};
    image_shard_write(corpus("image_shard", "grey_4x4.bin"), pixels, labels, 3, 1, 4, 4, 3);
    image_shard_write(corpus("image_shard", "rgb_2x3.bin"), pixels, labels, 2, 3, 2, 3, 4);

    real params[3 * 12];
    for (int i = 0; i < 36; i++) params[i] = (real)(i - 10) / 8;
    CheckpointInfo info = {12, 40, 1234, 0x9e3779b97f4a7c15ULL, (char*)"{\"steps\":40,\"attention\":\"flow\"}"};
    checkpoint_save(corpus("checkpoint", "small.bin"), &info, params, params + 12, params + 24);

    write_text(corpus("config", "all_fields.json"),
               "{\"steps\": 5, \"flip\": false, \"lr\": 0.01, \"attention\": \"softmax\", \"dims\": \"4,8,16\"}\n");
    write_text(corpus("config", "escapes.json"), "{\"dims\": \"2\", \"attention\": \"\\u006cinear\"}");
    write_text(corpus("config", "empty.json"), " {} ");

    char* chars[9] = {"\n", " ", "a", "c", "e", "h", "s", "t", "\\"};
    vocab_write(corpus("vocab", "chars.txt"), chars, 9);
    char* words[8] = {"<s>", "<pad>", "</s>", "<unk>", "the", "cat", "two words", "tab\there"};
    vocab_write(corpus("vocab", "words.txt"), words, 8);

    uint8_t image[8 * 6 * 4];
    for (int i = 0; i < (int)sizeof(image); i++) image[i] = (uint8_t)(i * 11);
    stbi_write_png(corpus("image_decode", "grey.png"), 8, 6, 1, image, 8);
    stbi_write_png(corpus("image_decode", "rgba.png"), 5, 7, 4, image, 5 * 4);
    stbi_write_jpg(corpus("image_decode", "rgb.jpg"), 8, 6, 3, image, 90);
    stbi_write_jpg(corpus("image_decode", "grey.jpg"), 16, 9, 1, image, 75);
    long n;
    char* cmyk = read_whole_file("dev/ref/cmyk.jpg", 1 << 16, &n); // Adobe CMYK, written by PIL
    const char* path = corpus("image_decode", "cmyk.jpg");
    FILE* f = fopen_check(path, "wb");
    fwrite_check(cmyk, 1, (size_t)n, f, path);
    fclose_check(f, path);
    free(cmyk);
    return 0;
}

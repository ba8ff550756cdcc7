"""Writes the image references for dev/test/test_data_images.c (run with /usr/bin/python3):
  dev/ref/resize_pil.bin: for each case (w, h, S), PIL's Resize(S) + CenterCrop(S) as torchvision
      does it (antialiased bilinear, shorter side S, longer int(S * long / short), crop offset
      int(round((size - S) / 2))) of the synthetic image pattern(w, h) below.
      Layout: int32 number of cases, then per case int32 w, h, S and S*S*3 uint8.
  dev/ref/cmyk.jpg: a 32x32 Adobe CMYK JPEG (four colour quadrants), and
  dev/ref/cmyk_rgb.bin: PIL's decode of it converted to RGB (32*32*3 uint8).
"""
import numpy as np
from PIL import Image

CASES = [(40, 24, 16), (17, 40, 16), (10, 13, 16), (300, 200, 64), (64, 64, 64), (23, 23, 7)]


def pattern(w, h):
    # Same formula as pattern() in test_data_images.c.
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 7 + y * 13 + c * 50 + (x * y) % 17) % 256 for c in range(3)], axis=-1)
    return img.astype(np.uint8)


def torchvision_resize_crop(img, S):
    w, h = img.size
    if w <= h:
        nw, nh = S, int(S * h / w)
    else:
        nw, nh = int(S * w / h), S
    r = img.resize((nw, nh), Image.BILINEAR)
    left, top = int(round((nw - S) / 2.0)), int(round((nh - S) / 2.0))
    return np.asarray(r.crop((left, top, left + S, top + S)))


with open("dev/ref/resize_pil.bin", "wb") as f:
    np.array([len(CASES)], dtype=np.int32).tofile(f)
    for w, h, S in CASES:
        np.array([w, h, S], dtype=np.int32).tofile(f)
        torchvision_resize_crop(Image.fromarray(pattern(w, h)), S).astype(np.uint8).tofile(f)

cmyk = np.zeros((32, 32, 4), dtype=np.uint8)
cmyk[:16, :16] = (0, 255, 255, 0)     # red
cmyk[:16, 16:] = (255, 0, 255, 0)     # green
cmyk[16:, :16] = (255, 255, 0, 0)     # blue
cmyk[16:, 16:] = (0, 0, 0, 128)       # grey
Image.fromarray(cmyk, mode="CMYK").save("dev/ref/cmyk.jpg", quality=95)
np.asarray(Image.open("dev/ref/cmyk.jpg").convert("RGB")).astype(np.uint8).tofile("dev/ref/cmyk_rgb.bin")

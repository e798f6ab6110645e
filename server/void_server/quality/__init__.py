"""Does a lossy speed option keep the picture? `metrics` measures one clip against another (PSNR, SSIM, over the
edit region and the whole frame); `check` runs the lossless job and each speed option on sample shots with the
user's own weights and judges them against a PSNR bar (`void-server quality`)."""

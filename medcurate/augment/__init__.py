"""GAN augmentation, checked: a class-conditional GAN trained on the train split only, synthetic
samples judged for quality (MMD, MS-SSIM, precision/recall/density/coverage), privacy (nearest
training record, patient by patient) and utility (the evaluation consumer, real vs real+synthetic).
"""

"""The CNNs that learn from the stored images themselves, beside the frozen features.

- :mod:`classifiers.cnn.scratch`: a small CNN trained from scratch;
- :mod:`classifiers.cnn.finetune`: a pretrained backbone fine-tuned, head first, then its last blocks;
- :mod:`classifiers.cnn.training`: what both share: augmentation, the training loop, its history, saving.

Keras is imported only inside the functions, so importing this package stays cheap.
"""

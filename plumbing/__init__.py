"""The small parts every featpipe package uses: the user-error type, atomic outputs and locks,
the registry type, how featpipe reaches Keras, and library versions.

Nothing here knows of images, features or models.
"""

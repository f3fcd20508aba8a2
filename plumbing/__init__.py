"""The small parts every featpipe package uses: the user-error type, atomic outputs and locks,
the registry type, how featpipe reaches Keras (devices and precision too), the Dask client,
and library versions.

Nothing here knows of images, features or models.
"""

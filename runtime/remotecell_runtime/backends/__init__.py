"""Where containers run: the ``Backend`` interface (``base``) and its implementations (``local``)."""

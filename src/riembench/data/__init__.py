"""The datasets: synthetic matrices, digits, MNIST, CIFAR-100, ImageNet, COCO (declared, with
their settings, in :mod:`riembench.config.datasets`)."""

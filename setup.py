from setuptools import find_packages, setup

setup(
    name='mmdet_posmlp',
    version='0.1.0',
    description='PosMLP backbone (ACM MM 2022) as a plugin for MMDetection 3.x',
    long_description=open('README.md', encoding='utf-8').read() if __import__('os').path.exists('README.md') else '',
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmdet_posmlp', 'mmdet_posmlp.*']),
    python_requires='>=3.8',
    # torch, torchvision and mmcv (with compiled ops) are installed by tools/setup_env.sh:
    # pip cannot build mmcv's ops correctly on its own (see README).
    install_requires=['mmdet>=3.0,<3.4', 'mmengine>=0.7', 'timm>=0.9'],
    entry_points={'timm.models': []},
    license='Apache-2.0',
)

"""External training data: public HPA images, the 2018 competition set, and merging data roots."""

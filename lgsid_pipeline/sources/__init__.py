"""Dataset readers: synthetic demo cities, Gowalla New York, Foursquare TSMC2014, the
GETNext/STHGCN Foursquare New York split."""

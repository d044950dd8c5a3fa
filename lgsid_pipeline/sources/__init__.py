"""Dataset readers: synthetic demo cities, Gowalla New York, Foursquare TSMC2014."""

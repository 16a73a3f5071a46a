module iot-tenant-operator.test/tools/images

go 1.26.0

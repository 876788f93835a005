include $(sort $(wildcard $(BR2_EXTERNAL_FWPACK_PATH)/package/*/*.mk))

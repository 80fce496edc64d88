// 简体中文: English text (as written in the t()/tn() call) -> Chinese. For tn() the key is
// the English plural form. Keep {placeholders} unchanged; group entries by view.
export const ZH_CN = {
};

// 简体中文: English text (as written in the t()/tn() call) -> Chinese. For tn() the key is
// the English plural form. Keep {placeholders} unchanged; group entries by view.
export const ZH_CN = {
  // Finding a shop by name (sidebar: "Chat with a shop")
  "Type the shop's name, or a part of it.": "输入店铺名称或其中一部分。",
  "Shops found": "找到的店铺",
  "{n} shops found": "找到 {n} 家店铺",
  "No shop has a name like that.": "没有名称相近的店铺。",
  "Shop id or name": "店铺 ID 或名称",
};
